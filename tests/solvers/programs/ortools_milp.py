from ortools.linear_solver import pywraplp


def main():
    solver = pywraplp.Solver.CreateSolver("SCIP")
    x = solver.IntVar(0, solver.infinity(), "x")
    y = solver.IntVar(0, solver.infinity(), "y")
    solver.Add(2 * x + y <= 4)
    solver.Add(x + 2 * y <= 4)
    solver.Maximize(x + y)
    solver.Solve()


if __name__ == "__main__":
    main()
