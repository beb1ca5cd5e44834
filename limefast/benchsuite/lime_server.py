"""The serve benchmark's baseline: a server that runs lime 0.2.0.1 per request, on the model
in-process (the design of KServe's LIME explainer, without its HTTP call to the predictor per
perturbation batch). ``python -m limefast.benchsuite.lime_server --model SPEC --port P``."""

from __future__ import annotations

import argparse
import sys

from limefast.optional import require


def baseline_app(classifier, size: int):
    """A FastAPI app whose :explain runs lime 0.2.0.1's ``explain_instance`` per request (a
    thread each, as a sync FastAPI route), calling the model in-process with lime's batches."""
    fastapi = require("fastapi", "the serve benchmark's baseline")
    from lime import lime_image

    from limefast.serve.inputs import Limits, decode_instance

    app = fastapi.FastAPI()
    limits = Limits(size=size)

    @app.get("/v1/models/m")
    def ready():
        return {"name": "m", "ready": True}

    @app.post("/v1/models/m:explain")
    def explain(body: dict):
        image = decode_instance(body["instances"][0], limits, "instances[0]")
        parameters = body.get("parameters", {})
        explainer = lime_image.LimeImageExplainer(random_state=parameters.get("seed", 0))
        exp = explainer.explain_instance(image, classifier, top_labels=5, hide_color=None,
                                         num_samples=int(parameters.get("num_samples", 1000)),
                                         batch_size=10)
        return {"explanations": [{"num_samples": int(parameters.get("num_samples", 1000)),
                                  "top_labels": [int(x) for x in exp.top_labels]}]}

    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m limefast.benchsuite.lime_server")
    p.add_argument("--model", required=True)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    import uvicorn

    from limefast.cli.inputs import load_model

    model = load_model(args.model, None)
    uvicorn.run(baseline_app(model.classifier, args.size), host="127.0.0.1", port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
