"""pyscipopt hook (sandbox side): records `Model.optimize()` (and its variants) from SCIP's own state.

`pyscipopt.Model` is a Cython type whose methods cannot be replaced, so the hook installs a subclass under
the public names `pyscipopt.Model` and `pyscipopt.scip.Model`; the program must import pyscipopt after
the prelude, which it always does.
"""


def install(capture, flip_sense):
    import pyscipopt
    from pyscipopt import scip

    base = scip.Model

    def describe(args, kwargs, result):
        model = args[0]
        has_solution = base.getNSols(model) > 0
        status = base.getStatus(model)
        return {
            "status": status,
            "objective": float(base.getObjVal(model)) if has_solution and status != "infeasible" else None,
            "variables": int(base.getNVars(model, transformed=False)),
            "constraints": int(base.getNConss(model, transformed=False)),
            "integers": int(base.getNIntVars(model)) + int(base.getNBinVars(model)),
            "maximize": base.getObjectiveSense(model) == "maximize",
        }

    def flip(args, kwargs):
        model = args[0]
        if base.getObjectiveSense(model) == "maximize":
            base.setMinimize(model)
        else:
            base.setMaximize(model)

    class Model(base):
        pass

    Model.__module__ = base.__module__
    Model.__qualname__ = base.__qualname__
    for name in ("optimize", "optimizeNogil", "solveConcurrent"):
        if hasattr(base, name):
            setattr(Model, name, getattr(base, name))
            capture.wrap(Model, name, describe, before=flip if flip_sense else None)
    pyscipopt.Model = Model
    scip.Model = Model
