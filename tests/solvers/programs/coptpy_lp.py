import coptpy as cp
from coptpy import COPT

env = cp.Envr()
model = env.createModel("lp")
x = model.addVar(name="x")
y = model.addVar(name="y")
model.addConstr(2 * x + y <= 4)
model.addConstr(x + 2 * y <= 4)
model.setObjective(x + y, sense=COPT.MAXIMIZE)
model.solve()
print("Optimal value:", model.objval)
