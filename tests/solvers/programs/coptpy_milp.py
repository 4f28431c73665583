import coptpy as cp
from coptpy import COPT


def main():
    env = cp.Envr()
    model = env.createModel("milp")
    model.setParam(COPT.Param.Logging, 0)
    x = model.addVar(vtype=COPT.INTEGER, name="x")
    y = model.addVar(vtype=COPT.INTEGER, name="y")
    model.addConstr(2 * x + y <= 4)
    model.addConstr(x + 2 * y <= 4)
    model.setObjective(x + y, sense=COPT.MAXIMIZE)
    model.solve()


if __name__ == "__main__":
    main()
