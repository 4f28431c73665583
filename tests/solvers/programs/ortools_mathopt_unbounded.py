from ortools.math_opt.python import mathopt

model = mathopt.Model(name="unbounded")
x = model.add_variable(lb=0.0, name="x")
y = model.add_variable(lb=0.0, name="y")
model.add_linear_constraint(x - y <= 1)
model.maximize(x + y)
params = mathopt.SolveParameters(presolve=mathopt.Emphasis.OFF)
result = mathopt.solve(model, mathopt.SolverType.GLOP, params=params)
print("Termination:", result.termination.reason)
