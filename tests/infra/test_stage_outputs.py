"""What the semsearch CLI reads to find a deployed stage (semsearch/stage.py) is what the app deploys."""

from __future__ import annotations

import pytest

from semsearch.stage import REQUIRED_OUTPUTS
from stacks.names import SearchOutputs, stack_name


@pytest.mark.parametrize("stage_name", ["dev", "prod"])
def test_the_search_stack_has_the_name_and_outputs_the_cli_reads(app, templates, stage_name):
    stage = app.node.find_child(stage_name)
    assert stage.search.stack_name == stack_name(stage_name, "search")
    outputs = templates[(stage_name, "search")].to_json()["Outputs"]
    assert set(REQUIRED_OUTPUTS) <= set(outputs)
    # The field names are the config's, as the glue builds the index with them.
    assert outputs[SearchOutputs.TEXT_FIELD]["Value"] == "text"
    assert outputs[SearchOutputs.EMBEDDING_FIELD]["Value"] == "embedding"
