import highspy

h = highspy.Highs()
x = h.addVariable(lb=0)
y = h.addVariable(lb=0)
h.addConstr(x + y >= 5)
h.addConstr(x + y <= 3)
h.maximize(x + y)
print("Status:", h.getModelStatus())
