"""PuLP hook (sandbox side): records `LpProblem.solve()` from the problem's status and objective."""


def install(capture, flip_sense):
    import pulp

    problem_class = pulp.LpProblem

    def describe(args, kwargs, result):
        problem = args[0]
        objective = problem.objective
        value = objective.value() if objective is not None else None
        variables = problem.variables()
        return {
            "status": int(problem.status),
            "solution_status": int(problem.sol_status),
            "objective": None if value is None else float(value),
            "variables": len(variables),
            "constraints": len(problem.constraints),
            "integers": sum(1 for v in variables if v.cat != pulp.LpContinuous),
            "maximize": problem.sense == pulp.LpMaximize,
        }

    def flip(args, kwargs):
        problem = args[0]
        problem.sense = -problem.sense

    capture.wrap(problem_class, "solve", describe, before=flip if flip_sense else None)
