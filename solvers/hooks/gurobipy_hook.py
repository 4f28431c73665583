"""gurobipy hook (sandbox side): records every `Model.optimize()` from the model's own attributes."""


def install(capture, flip_sense):
    import gurobipy

    model_class = gurobipy.Model
    get = model_class.getAttr  # the class' own reader, out of reach of a program's Model subclass

    def describe(args, kwargs, result):
        model = args[0]
        sol_count = int(get(model, "SolCount"))
        return {
            "status": int(get(model, "Status")),
            "objective": float(get(model, "ObjVal")) if sol_count > 0 else None,
            "variables": int(get(model, "NumVars")),
            "constraints": int(get(model, "NumConstrs"))
            + int(get(model, "NumQConstrs"))
            + int(get(model, "NumGenConstrs"))
            + int(get(model, "NumSOS")),
            "integers": int(get(model, "NumIntVars")),
            "maximize": int(get(model, "ModelSense")) == -1,
        }

    def flip(args, kwargs):
        model = args[0]
        model.update()
        model_class.setAttr(model, "ModelSense", -int(get(model, "ModelSense")))

    capture.wrap(model_class, "optimize", describe, before=flip if flip_sense else None)
