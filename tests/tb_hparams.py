"""Test helper: what TensorBoard's HParams view reads from one run's event files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata


def read_hparams(tb: Path) -> dict[str, Any]:
    """``session``: the run's hparams; ``columns`` and ``metrics``: the experiment summary's
    hparam names and metric tags (empty without one); ``ended``: a session end was written;
    ``last``: each metric tag's last scalar value (what the view shows)."""
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    session = {k: json_format.MessageToDict(v) for k, v in start.hparams.items()}
    columns, metrics = [], []
    if metadata.EXPERIMENT_TAG in content:
        experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
        columns = [h.name for h in experiment.hparam_infos]
        metrics = [m.name.tag for m in experiment.metric_infos]
    scalars = set(events.Tags()["scalars"])
    last = {tag: events.Scalars(tag)[-1].value for tag in metrics if tag in scalars}
    ended = metadata.SESSION_END_INFO_TAG in content
    return {
        "session": session,
        "columns": columns,
        "metrics": metrics,
        "ended": ended,
        "last": last,
    }
