from ortools.linear_solver import pywraplp

solver = pywraplp.Solver.CreateSolver("GLOP")
x = solver.NumVar(0, solver.infinity(), "x")
y = solver.NumVar(0, solver.infinity(), "y")
solver.Add(x + y >= 5)
solver.Add(x + y <= 3)
solver.Maximize(x + y)
print("Status:", solver.Solve())
