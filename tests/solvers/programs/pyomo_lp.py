import pyomo.environ as pyo

model = pyo.ConcreteModel()
model.x = pyo.Var(within=pyo.NonNegativeReals)
model.y = pyo.Var(within=pyo.NonNegativeReals)
model.c1 = pyo.Constraint(expr=2 * model.x + model.y <= 4)
model.c2 = pyo.Constraint(expr=model.x + 2 * model.y <= 4)
model.obj = pyo.Objective(expr=model.x + model.y, sense=pyo.maximize)
results = pyo.SolverFactory("highs").solve(model)
print("Optimal value:", pyo.value(model.obj))
