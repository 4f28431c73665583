import gurobipy as gp
from gurobipy import GRB

model = gp.Model("lp")
x = model.addVar(name="x")
y = model.addVar(name="y")
model.addConstr(2 * x + y <= 4)
model.addConstr(x + 2 * y <= 4)
model.setObjective(x + y, GRB.MAXIMIZE)
model.optimize()
print("Optimal value:", model.ObjVal)
