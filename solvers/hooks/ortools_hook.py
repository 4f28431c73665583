"""OR-Tools hook (sandbox side): pywraplp `Solver.Solve`, CP-SAT `CpSolver.Solve`/`solve`, MathOpt `solve`."""


def install(capture, flip_sense):
    install_linear_solver(capture, flip_sense)
    install_cp_sat(capture, flip_sense)
    install_math_opt(capture, flip_sense)


def install_linear_solver(capture, flip_sense):
    from ortools.linear_solver import pywraplp

    solver_class = pywraplp.Solver
    objective_of = solver_class.Objective

    def describe(args, kwargs, result):
        solver = args[0]
        status = int(result)
        has_solution = status in (solver_class.OPTIMAL, solver_class.FEASIBLE)
        objective = objective_of(solver)
        return {
            "api": "pywraplp",
            "status": status,
            "objective": float(objective.Value()) if has_solution else None,
            "variables": int(solver_class.NumVariables(solver)),
            "constraints": int(solver_class.NumConstraints(solver)),
            "integers": sum(1 for v in solver_class.variables(solver) if v.integer()),
            "maximize": bool(objective.maximization()),
        }

    def flip(args, kwargs):
        objective = objective_of(args[0])
        objective.SetOptimizationDirection(not objective.maximization())

    capture.wrap(solver_class, "Solve", describe, before=flip if flip_sense else None)


def install_cp_sat(capture, flip_sense):
    from ortools.sat.python import cp_model

    solver_class = cp_model.CpSolver

    def describe(args, kwargs, result):
        solver = args[0]
        proto = (args[1] if len(args) > 1 else kwargs["model"]).proto
        status = int(result)
        has_objective = proto.has_objective() or proto.has_floating_point_objective()
        has_solution = status in (int(cp_model.OPTIMAL), int(cp_model.FEASIBLE))
        if proto.has_objective():
            maximize = proto.objective.scaling_factor < 0
        else:
            maximize = has_objective and proto.floating_point_objective.maximize
        return {
            "api": "cp_sat",
            "status": status,
            "objective": float(solver_class.ObjectiveValue(solver)) if has_solution and has_objective else None,
            "variables": len(proto.variables),
            "constraints": len(proto.constraints),
            "integers": len(proto.variables),
            "maximize": bool(maximize),
        }

    def flip(args, kwargs):
        proto = (args[1] if len(args) > 1 else kwargs["model"]).proto
        if proto.has_objective():
            # CP-SAT minimises scaling_factor * (sum(coeffs * vars) + offset); maximisation is stored with a
            # negative scaling factor, so negating all three keeps the reported value and reverses the sense.
            objective = proto.objective
            for i in range(len(objective.coeffs)):
                objective.coeffs[i] = -objective.coeffs[i]
            objective.offset = -objective.offset
            objective.scaling_factor = -(objective.scaling_factor or 1.0)
        elif proto.has_floating_point_objective():
            proto.floating_point_objective.maximize = not proto.floating_point_objective.maximize

    # Solve() calls solve(): both are recorded once (outermost), the flip goes on the inner one only.
    capture.wrap(solver_class, "solve", describe, before=flip if flip_sense else None)
    capture.wrap(solver_class, "Solve", describe)


def install_math_opt(capture, flip_sense):
    from ortools.math_opt.python import mathopt
    from ortools.math_opt.python import solve as solve_module

    reasons = mathopt.TerminationReason

    def describe(args, kwargs, result):
        model = args[0] if args else kwargs["opt_model"]
        reason = result.termination.reason
        has_solution = result.has_primal_feasible_solution()
        return {
            "api": "mathopt",
            "status": reason.name,
            "objective": float(result.objective_value()) if has_solution else None,
            "variables": sum(1 for _ in model.variables()),
            "constraints": sum(1 for _ in model.linear_constraints()),
            "integers": sum(1 for v in model.variables() if v.integer),
            "maximize": bool(model.objective.is_maximize),
            "optimal": reason == reasons.OPTIMAL,
        }

    def flip(args, kwargs):
        model = args[0] if args else kwargs["opt_model"]
        model.objective.is_maximize = not model.objective.is_maximize

    capture.wrap(solve_module, "solve", describe, before=flip if flip_sense else None)
    mathopt.solve = solve_module.solve
