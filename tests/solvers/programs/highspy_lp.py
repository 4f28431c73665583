import highspy

h = highspy.Highs()
x = h.addVariable(lb=0)
y = h.addVariable(lb=0)
h.addConstr(2 * x + y <= 4)
h.addConstr(x + 2 * y <= 4)
h.maximize(x + y)
print("Optimal value:", h.getInfo().objective_function_value)
