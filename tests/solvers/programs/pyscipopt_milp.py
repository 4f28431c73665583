from pyscipopt import Model


def main():
    model = Model("milp")
    model.hideOutput()
    x = model.addVar("x", vtype="INTEGER", lb=0)
    y = model.addVar("y", vtype="INTEGER", lb=0)
    model.addCons(2 * x + y <= 4)
    model.addCons(x + 2 * y <= 4)
    model.setObjective(x + y, sense="maximize")
    model.optimize()


if __name__ == "__main__":
    main()
