import gurobipy as gp
from gurobipy import GRB

model = gp.Model("unbounded")
model.Params.DualReductions = 0
x = model.addVar()
y = model.addVar()
model.addConstr(x - y <= 1)
model.setObjective(x + y, GRB.MAXIMIZE)
model.optimize()
print("Status:", model.Status)
