import pyomo.environ as pyo

model = pyo.ConcreteModel()
model.x = pyo.Var(within=pyo.NonNegativeReals)
model.y = pyo.Var(within=pyo.NonNegativeReals)
model.c1 = pyo.Constraint(expr=model.x + model.y >= 5)
model.c2 = pyo.Constraint(expr=model.x + model.y <= 3)
model.obj = pyo.Objective(expr=model.x + model.y, sense=pyo.maximize)
results = pyo.SolverFactory("highs").solve(model, load_solutions=False)
print("Termination:", results.solver.termination_condition)
