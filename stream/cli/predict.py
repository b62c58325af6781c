"""`tusk predict fit` (and the demo): gather every customer's summary from the workers, fit
the models, publish them with the definitions. Needs no Faust app, only HTTP and a producer."""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

from processors.predict import models as predict
from processors.predict import rfm
from stream.cli.base import CliError, http_get
from stream.runtime.definitions import produce_definition
from stream.runtime.settings import Settings


def fit_cluster(url: str, until: str | None, unit: str, timeout: float = 300.0) -> dict[str, Any]:
    """The fitted parameters as `tusk predict fit` prints them (CliError with one sentence)."""
    query = ""
    if until:
        try:
            rfm.parse_day(until)
        except ValueError as e:
            raise CliError(f"--until: {e}.") from None
        query = "?until=" + urllib.parse.quote(until)
    status, body = http_get(url.rstrip("/") + "/predict/summaries" + query, timeout=timeout)
    if status != 200:
        raise CliError(f"the worker could not gather the summaries ({status}): {body.get('message', body)}.")
    summaries = [rfm.Summary(first, x, recency, age, monetary, body["as_of_day"])
                 for _pid, first, x, recency, age, monetary in body["summaries"]]
    try:
        result = predict.fit(summaries, unit)
    except predict.FitError as e:
        raise CliError(f"cannot fit the models on {len(summaries)} customer(s): {e}.") from None
    result["until"] = body["as_of"]
    result["fitted_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return result


def publish(settings: Settings, result: dict[str, Any]) -> None:
    """Every worker computes the predictive traits with these parameters once it reads them."""
    try:
        produce_definition(settings, "predict_model", "model", result)
    except Exception as e:
        raise CliError(f"the model was fitted but not published to Kafka at {settings.bootstrap}: "
                       f"{e}") from e
