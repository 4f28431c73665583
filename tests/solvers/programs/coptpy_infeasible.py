import coptpy as cp
from coptpy import COPT

env = cp.Envr()
model = env.createModel("infeasible")
x = model.addVar()
y = model.addVar()
model.addConstr(x + y >= 5)
model.addConstr(x + y <= 3)
model.setObjective(x + y, sense=COPT.MAXIMIZE)
model.solve()
print("Status:", model.status)
