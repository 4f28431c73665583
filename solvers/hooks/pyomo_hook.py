"""Pyomo hook (sandbox side): records the `solve(model)` of every solver made by `SolverFactory(...)`.

The objective comes from the model's active objective when the solver loaded a solution, otherwise from the
solver's reported incumbent bound (`results.problem`), so `load_solutions=False` programs are covered too.
"""


def install(capture, flip_sense):
    import pyomo.environ as pyo
    from pyomo.opt.base.solvers import SolverFactoryClass

    def active_objectives(model):
        return list(model.component_data_objects(pyo.Objective, active=True))

    def describe(args, kwargs, results):
        model = args[0] if args else kwargs["model"]
        objectives = active_objectives(model)
        maximize = len(objectives) == 1 and objectives[0].sense == pyo.maximize
        solver = results.solver
        termination = str(solver.termination_condition)
        objective = pyo.value(objectives[0], exception=False) if len(objectives) == 1 else None
        if objective is None and termination in ("optimal", "feasible", "locallyOptimal", "globallyOptimal"):
            objective = results.problem.lower_bound if maximize else results.problem.upper_bound
        return {
            "status": termination,
            "solver_status": str(solver.status),
            "objective": None if objective is None else float(objective),
            "objectives": len(objectives),
            "variables": int(model.nvariables()),
            "constraints": int(model.nconstraints()),
            "integers": sum(1 for v in model.component_data_objects(pyo.Var) if not v.is_continuous()),
            "maximize": maximize,
        }

    def flip(args, kwargs):
        for objective in active_objectives(args[0] if args else kwargs["model"]):
            objective.sense = pyo.minimize if objective.sense == pyo.maximize else pyo.maximize

    make_solver = SolverFactoryClass.__call__

    def hooked_factory(self, *args, **kwargs):
        solver = make_solver(self, *args, **kwargs)
        solve = getattr(solver, "solve", None)
        if solve is not None:
            holder = type("SolverHandle", (), {"solve": staticmethod(solve)})
            capture.wrap(holder, "solve", describe, before=flip if flip_sense else None)
            solver.solve = holder.solve
        return solver

    SolverFactoryClass.__call__ = hooked_factory
