from ortools.sat.python import cp_model

model = cp_model.CpModel()
x = model.NewIntVar(0, 10, "x")
y = model.NewIntVar(0, 10, "y")
model.Add(2 * x + y <= 4)
model.Add(x + 2 * y <= 4)
model.Maximize(x + y)
solver = cp_model.CpSolver()
status = solver.Solve(model)
print("Optimal value:", solver.ObjectiveValue())
