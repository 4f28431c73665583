import pulp

prob = pulp.LpProblem("lp", pulp.LpMaximize)
x = pulp.LpVariable("x", lowBound=0)
y = pulp.LpVariable("y", lowBound=0)
prob += x + y
prob += 2 * x + y <= 4
prob += x + 2 * y <= 4
prob.solve(pulp.PULP_CBC_CMD(msg=False))
print("Optimal value:", pulp.value(prob.objective))
