"""Models as they are: params, structured output and reasoning-model adaptations (no Ray)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import openai
import pytest
from pydantic import BaseModel

from chainray.call.adaptations import adapt, describe, known_adaptations, learn_adaptation
from chainray.call.streaming import collect_stream
from chainray.call.structured import response_format, schema_problem
from chainray.errors import SpecError
from chainray.spec.chain import chain_from_dict
from chainray.spec.prompts import render_prompt

INTENT = {"type": "object", "properties": {"intent": {"enum": ["billing", "bug"]},
                                           "urgency": {"type": "integer"}},
          "required": ["intent"]}


def _router(prompt: str, schema=INTENT) -> dict:
    return {"name": "r", "inputs": {"q": "my bill"}, "steps": [
        {"id": "classify", "prompt": "Classify {q}", "schema": schema},
        {"id": "route", "after": ["classify"], "prompt": prompt}]}


def test_a_template_may_name_a_field_of_a_structured_reply():
    chain = chain_from_dict(_router("Intent: {classify.intent}"))
    prompt = render_prompt(chain.by_id["route"].prompt, chain.inputs,
                           {"classify": json.dumps({"intent": "bug", "urgency": 3})},
                           ("classify",))
    assert prompt == "Intent: bug"  # no "previously covered" block: classify was named


@pytest.mark.parametrize("template, says", [
    ("{classify.mood}", "has no property 'mood' (properties: intent, urgency)"),
    ("{q.x}", "names no input or dependency"),
])
def test_a_field_the_schema_lacks_is_refused_at_build_time(template, says):
    with pytest.raises(SpecError) as caught:
        chain_from_dict(_router(template))
    assert says in str(caught.value) and caught.value.step == "route"


def test_a_field_of_a_step_without_schema_is_refused():
    data = _router("{classify.intent}", schema=None)
    del data["steps"][0]["schema"]
    with pytest.raises(SpecError, match="has no schema"):
        chain_from_dict(data)


def test_a_pydantic_model_becomes_the_steps_schema():
    class Intent(BaseModel):
        intent: str
        urgency: int

    chain = chain_from_dict(_router("{classify.urgency}", schema=Intent))
    assert chain.by_id["classify"].output_schema["required"] == ["intent", "urgency"]


def test_params_pass_through_merged_over_defaults_and_reserved_keys_are_refused():
    chain = chain_from_dict({"name": "p", "defaults": {"params": {"seed": 7, "top_p": 0.5}},
                             "steps": [{"id": "a", "prompt": "x", "params": {"top_p": 0.9}}]})
    assert chain.settings_for(chain.by_id["a"]).params == {"seed": 7, "top_p": 0.9}
    with pytest.raises(SpecError) as caught:
        chain_from_dict({"name": "p", "steps": [{"id": "a", "prompt": "x",
                                                 "params": {"max_tokens": 5}}]})
    assert caught.value.step == "a" and "params" in caught.value.field
    with pytest.raises(SpecError):  # not JSON
        chain_from_dict({"name": "p", "steps": [{"id": "a", "prompt": "x",
                                                 "params": {"stop": object()}}]})


def test_reasoning_families_are_adapted_before_anything_is_sent():
    sent = {"model": "o4-mini", "max_tokens": 400, "temperature": 0.3, "seed": 1}
    assert adapt(sent, known_adaptations("o4-mini")) == {
        "model": "o4-mini", "max_completion_tokens": 400, "seed": 1}
    assert adapt(sent, known_adaptations("gpt-4o-mini")) == sent


def test_a_400_teaches_a_rename_or_a_drop():
    sent = {"max_tokens": 10, "temperature": 0.3}
    rename = learn_adaptation(
        400, "unsupported_parameter", None, "Unsupported parameter: 'max_tokens' is not "
        "supported with this model. Use 'max_completion_tokens' instead.", sent)
    assert (rename.action, rename.to) == ("rename", "max_completion_tokens")
    drop = learn_adaptation(400, "unsupported_value", "temperature", "Unsupported value: "
                            "'temperature' does not support 0.3 with this model.", sent)
    assert drop.action == "drop"
    assert describe("o4-mini", drop, 0.3) == ("o4-mini: temperature 0.3 not supported, "
                                              "using the default")
    assert learn_adaptation(400, "invalid_request_error", None, "bad", sent) is None
    assert learn_adaptation(500, "unsupported_value", "temperature", "", sent) is None


def test_schema_problems_are_named():
    assert schema_problem('{"intent": "bug"}', INTENT) is None
    assert "not JSON" in schema_problem("Sure! Here it is", INTENT)
    assert "intent" in schema_problem('{"intent": "weather"}', INTENT)
    assert response_format(INTENT, "classify")["json_schema"]["schema"] == INTENT


def test_a_stream_gives_text_usage_and_time_to_first_token():
    def chunk(content=None, finish=None, usage=None):
        choices = [] if usage else [SimpleNamespace(
            delta=SimpleNamespace(content=content, refusal=None, tool_calls=None),
            finish_reason=finish)]
        return SimpleNamespace(choices=choices, usage=usage)

    times = iter([1.5, 1.7, 2.0])

    async def chunks():
        for item in (chunk(""), chunk("Hel"), chunk("lo"), chunk("!", "stop"),
                     chunk(usage=SimpleNamespace(prompt_tokens=9, completion_tokens=3))):
            yield item

    reply = asyncio.run(collect_stream(chunks(), sent_at=1.0, clock=lambda: next(times)))
    assert (reply.text, reply.finish_reason) == ("Hello!", "stop")
    assert (reply.prompt_tokens, reply.completion_tokens) == (9, 3)
    assert reply.ttft_s == pytest.approx(0.5) and reply.decode_s == pytest.approx(0.5)


def test_the_simulator_answers_as_a_reasoning_model(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="o4-mini", messages=messages, max_tokens=20)
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", "max_tokens")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="o4-mini", messages=messages,
                                       max_completion_tokens=20, temperature=0.3)
    assert (caught.value.code, caught.value.param) == ("unsupported_value", "temperature")
    ok = client.chat.completions.create(model="o4-mini", messages=messages,
                                        max_completion_tokens=20)
    assert ok.choices[0].message.content
    assert client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                          max_tokens=20, temperature=0.3).choices


def test_the_simulator_follows_a_requested_schema(sim):
    client = openai.OpenAI(base_url=sim.base_url, api_key="x", max_retries=0)
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "classify my bill"}],
        max_tokens=50, response_format=response_format(INTENT, "classify"))
    assert schema_problem(reply.choices[0].message.content, INTENT) is None


def test_the_simulator_speaks_azure_openais_deployment_shape(sim):
    root = sim.base_url.rsplit("/v1", 1)[0]
    client = openai.AzureOpenAI(azure_endpoint=root, api_version="2024-10-21",
                                api_key="azure-key", max_retries=0)
    reply = client.chat.completions.create(
        model="my-deployment", messages=[{"role": "user", "content": "hi"}], max_tokens=10)
    assert reply.model == "my-deployment" and reply.choices[0].message.content
