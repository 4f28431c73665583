"""highspy hook (sandbox side): records `Highs.run()` and its wrappers `solve`, `minimize`, `maximize`."""


def install(capture, flip_sense):
    import highspy

    highs_class = highspy.Highs
    model_status = highs_class.getModelStatus
    get_info = highs_class.getInfo
    get_lp = highs_class.getLp
    get_sense = highs_class.getObjectiveSense
    solution_status = highspy.SolutionStatus.kSolutionStatusFeasible

    def describe(args, kwargs, result):
        highs = args[0]
        info = get_info(highs)
        lp = get_lp(highs)
        has_solution = info.primal_solution_status == solution_status
        return {
            "status": model_status(highs).name,
            "objective": float(info.objective_function_value) if has_solution else None,
            "variables": int(lp.num_col_),
            "constraints": int(lp.num_row_),
            "integers": sum(1 for kind in lp.integrality_ if kind != highspy.HighsVarType.kContinuous),
            "maximize": get_sense(highs)[1] == highspy.ObjSense.kMaximize,
        }

    def flip(args, kwargs):
        highs = args[0]
        sense = get_sense(highs)[1]
        maximize = highspy.ObjSense.kMaximize
        highs_class.changeObjectiveSense(highs, highspy.ObjSense.kMinimize if sense == maximize else maximize)

    # Every entry point ends in the compiled base class' run(), called as super().run() (sometimes on a worker
    # thread), so run() is wrapped on the base class; minimize()/maximize() set the sense before reaching it,
    # which is why the flip belongs there. The Python-level entry points are wrapped too, for the record.
    capture.wrap(highs_class.__mro__[1], "run", describe, before=flip if flip_sense else None)
    for name in ("solve", "minimize", "maximize"):
        if name in vars(highs_class):
            capture.wrap(highs_class, name, describe)
