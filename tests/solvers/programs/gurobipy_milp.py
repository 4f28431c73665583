import gurobipy as gp
from gurobipy import GRB


def main():
    model = gp.Model("milp")
    model.Params.OutputFlag = 0
    x = model.addVar(vtype=GRB.INTEGER, name="x")
    y = model.addVar(vtype=GRB.INTEGER, name="y")
    model.addConstr(2 * x + y <= 4)
    model.addConstr(x + 2 * y <= 4)
    model.setObjective(x + y, GRB.MAXIMIZE)
    model.optimize()


if __name__ == "__main__":
    main()
