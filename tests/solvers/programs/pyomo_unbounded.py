import pyomo.environ as pyo

model = pyo.ConcreteModel()
model.x = pyo.Var(within=pyo.NonNegativeReals)
model.y = pyo.Var(within=pyo.NonNegativeReals)
model.c1 = pyo.Constraint(expr=model.x - model.y <= 1)
model.obj = pyo.Objective(expr=model.x + model.y, sense=pyo.maximize)
solver = pyo.SolverFactory("highs")
solver.config.solver_options["presolve"] = "off"
results = solver.solve(model, load_solutions=False)
print("Termination:", results.solver.termination_condition)
