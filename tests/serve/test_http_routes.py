"""The HTTP body rewrite (serve/http_routes.py): every malformed sampling_params item is named."""
import pytest

from sglang_esamp.algo.config import ESampParamError
from sglang_esamp.serve.http_routes import rewrite_body


def test_every_malformed_sampling_params_item_is_named():
    with pytest.raises(ESampParamError) as e:
        rewrite_body("/generate", {"text": ["a", "b"], "sampling_params": [{"esamp": True}, "x"]})
    assert e.value.field == "sampling_params[1]"
    with pytest.raises(ESampParamError) as e:
        rewrite_body("/generate", {"text": "a", "sampling_params": 3})
    assert e.value.field == "sampling_params"
    with pytest.raises(ESampParamError) as e:
        rewrite_body("/v1/completions", {"prompt": "a", "custom_params": [1], "esamp": True})
    assert e.value.field == "custom_params"
