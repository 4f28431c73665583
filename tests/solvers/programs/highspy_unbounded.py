import highspy

h = highspy.Highs()
h.setOptionValue("presolve", "off")
x = h.addVariable(lb=0)
y = h.addVariable(lb=0)
h.addConstr(x - y <= 1)
h.maximize(x + y)
print("Status:", h.getModelStatus())
