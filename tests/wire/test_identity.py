"""Sessions and explicit groups cannot cross clients (wire.identity through wire.request.accept)."""
import pytest

from sglang_esamp.algo.config import ESampParamError
from sglang_esamp.wire import identity
from sglang_esamp.wire.request import GROUP_KEY, accept, stamp_group


def http(value, auth=None):
    """What the HTTP middleware does, then the tokenizer hook (which re-reads the canonical value)."""
    holder = {"esamp": value}
    accept(holder, authorization=auth)
    again = dict(holder)
    accept(again)
    assert again["custom_params"] == holder["custom_params"]
    return holder["custom_params"]


def test_a_new_session_gets_a_server_issued_id_that_the_same_client_can_continue():
    sid = http({"session": "new"}, "Bearer alice")["esamp"]["session"]
    assert sid.startswith("s-") and sid != "new"
    assert http({"session": sid}, "Bearer alice")["esamp"]["session"] == sid
    assert http({"session": "new"}, "Bearer alice")["esamp"]["session"] != sid   # each "new" is a new session


@pytest.mark.parametrize("bad", ["my-session", "s-abc.def", None])
def test_a_session_id_the_server_did_not_issue_is_refused(bad):
    sid = http({"session": "new"}, "Bearer alice")["esamp"]["session"]
    bad = bad or sid[:-1] + ("0" if sid[-1] != "0" else "1")   # tampered signature
    with pytest.raises(ESampParamError, match="esamp.session") as e:
        http({"session": bad}, "Bearer alice")
    assert e.value.field == "esamp.session"


def test_another_client_cannot_use_a_session_it_saw():
    sid = http({"session": "new"}, "Bearer alice")["esamp"]["session"]
    for other in ("Bearer mallory", None):
        with pytest.raises(ESampParamError, match="esamp.session"):
            http({"session": sid}, other)


def test_explicit_groups_live_in_the_client_namespace():
    def key(auth):
        return stamp_group(http({"group": "g1", "group_size": 2}, auth), "rid", 1)[GROUP_KEY]["key"]
    assert key("Bearer alice") == key("Bearer alice")
    assert len({key("Bearer alice"), key("Bearer bob"), key(None)}) == 3
    assert key(None) == "user:anon:g1"


@pytest.mark.parametrize("reserved", [GROUP_KEY, identity.CLIENT_KEY])
def test_the_server_stamps_cannot_be_sent_by_a_client(reserved):
    with pytest.raises(ESampParamError) as e:
        accept({"esamp": True, "custom_params": {reserved: {"key": "user:x", "size": 1}}}, authorization=None)
    assert e.value.field == "custom_params." + reserved


def test_a_forged_client_tag_is_refused_on_the_tokenizer_path():
    ok = http({"group": "g"}, "Bearer alice")[identity.CLIENT_KEY]
    ns = ok.split(".")[0]
    with pytest.raises(ESampParamError, match="esamp_client"):
        accept({"esamp": {"group": "g"}, "custom_params": {identity.CLIENT_KEY: ns + ".0000"}})


def test_engine_calls_are_local_and_keep_their_sessions():
    holder = {"esamp": {"session": "new"}}
    accept(holder)
    sid = holder["custom_params"]["esamp"]["session"]
    accept({"esamp": {"session": sid}})
    with pytest.raises(ESampParamError):
        http({"session": sid}, None)   # an Engine session is not an anonymous HTTP client's
