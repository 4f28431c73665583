from ortools.math_opt.python import mathopt

model = mathopt.Model(name="lp")
x = model.add_variable(lb=0.0, name="x")
y = model.add_variable(lb=0.0, name="y")
model.add_linear_constraint(2 * x + y <= 4)
model.add_linear_constraint(x + 2 * y <= 4)
model.maximize(x + y)
result = mathopt.solve(model, mathopt.SolverType.GLOP)
print("Optimal value:", result.objective_value())
