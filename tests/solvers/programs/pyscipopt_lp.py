from pyscipopt import Model

model = Model("lp")
x = model.addVar("x", lb=0)
y = model.addVar("y", lb=0)
model.addCons(2 * x + y <= 4)
model.addCons(x + 2 * y <= 4)
model.setObjective(x + y, sense="maximize")
model.optimize()
print("Optimal value:", model.getObjVal())
