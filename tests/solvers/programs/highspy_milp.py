import highspy


def main():
    h = highspy.Highs()
    h.silent()
    x = h.addIntegral(lb=0)
    y = h.addIntegral(lb=0)
    h.addConstr(2 * x + y <= 4)
    h.addConstr(x + 2 * y <= 4)
    h.setObjective(x + y, sense=highspy.ObjSense.kMaximize)
    h.run()


if __name__ == "__main__":
    main()
