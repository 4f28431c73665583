from pyscipopt import Model

model = Model("unbounded")
x = model.addVar("x", lb=0)
y = model.addVar("y", lb=0)
model.addCons(x - y <= 1)
model.setObjective(x + y, sense="maximize")
model.optimize()
print("Status:", model.getStatus())
