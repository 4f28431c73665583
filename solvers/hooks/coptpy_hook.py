"""coptpy hook (sandbox side): records `Model.solve()` and `Model.solveLP()` from the model's attributes."""


def install(capture, flip_sense):
    import coptpy

    model_class = coptpy.Model
    get = model_class.getAttr
    set_sense = model_class.setObjSense
    ended_as_lp = {}

    def describe(args, kwargs, result):
        model = args[0]
        lp = ended_as_lp.get(id(model), False) or not int(get(model, "IsMIP"))
        if lp:
            status = int(get(model, "LpStatus"))
            has_solution = bool(int(get(model, "HasLpSol")))
            objective = float(get(model, "LpObjval")) if has_solution else None
        else:
            status = int(get(model, "MipStatus"))
            has_solution = bool(int(get(model, "HasMipSol")))
            objective = float(get(model, "BestObj")) if has_solution else None
        return {
            "status": status,
            "objective": objective,
            "variables": int(get(model, "Cols")),
            "constraints": int(get(model, "Rows"))
            + int(get(model, "QConstrs"))
            + int(get(model, "Indicators"))
            + int(get(model, "Soss")),
            "integers": int(get(model, "Ints")) + int(get(model, "Bins")),
            "maximize": int(get(model, "ObjSense")) == coptpy.COPT.MAXIMIZE,
        }

    def mark(lp):
        def before(args, kwargs):
            model = args[0]
            ended_as_lp[id(model)] = lp
            if flip_sense:
                sense = int(get(model, "ObjSense"))
                set_sense(model, coptpy.COPT.MINIMIZE if sense == coptpy.COPT.MAXIMIZE else coptpy.COPT.MAXIMIZE)

        return before

    capture.wrap(model_class, "solve", describe, before=mark(False))
    capture.wrap(model_class, "solveLP", describe, before=mark(True))
