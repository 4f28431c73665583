import pyomo.environ as pyo


def main():
    model = pyo.ConcreteModel()
    model.x = pyo.Var(within=pyo.NonNegativeIntegers)
    model.y = pyo.Var(within=pyo.NonNegativeIntegers)
    model.c1 = pyo.Constraint(expr=2 * model.x + model.y <= 4)
    model.c2 = pyo.Constraint(expr=model.x + 2 * model.y <= 4)
    model.obj = pyo.Objective(expr=model.x + model.y, sense=pyo.maximize)
    results = pyo.SolverFactory("appsi_highs").solve(model, load_solutions=False)
    if results.solver.termination_condition == pyo.TerminationCondition.optimal:
        model.solutions.load_from(results)


if __name__ == "__main__":
    main()
