import gurobipy as gp
from gurobipy import GRB

model = gp.Model("infeasible")
x = model.addVar()
y = model.addVar()
model.addConstr(x + y >= 5)
model.addConstr(x + y <= 3)
model.setObjective(x + y, GRB.MAXIMIZE)
model.optimize()
print("Status:", model.Status)
