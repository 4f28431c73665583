import pulp


def main():
    prob = pulp.LpProblem("milp", pulp.LpMaximize)
    x = pulp.LpVariable("x", lowBound=0, cat="Integer")
    y = pulp.LpVariable("y", lowBound=0, cat="Integer")
    prob += x + y
    prob += 2 * x + y <= 4
    prob += x + 2 * y <= 4
    prob.solve(pulp.PULP_CBC_CMD(msg=False))


if __name__ == "__main__":
    main()
