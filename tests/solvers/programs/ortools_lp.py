from ortools.linear_solver import pywraplp

solver = pywraplp.Solver.CreateSolver("GLOP")
x = solver.NumVar(0, solver.infinity(), "x")
y = solver.NumVar(0, solver.infinity(), "y")
solver.Add(2 * x + y <= 4)
solver.Add(x + 2 * y <= 4)
solver.Maximize(x + y)
status = solver.Solve()
print("Optimal value:", solver.Objective().Value())
