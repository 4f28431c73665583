from ortools.sat.python import cp_model

model = cp_model.CpModel()
x = model.new_int_var(0, 10, "x")
y = model.new_int_var(0, 10, "y")
model.add(x + y >= 5)
model.add(x + y <= 3)
model.maximize(x + y)
solver = cp_model.CpSolver()
print("Status:", solver.solve(model))
