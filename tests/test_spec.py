"""Chain validation: every error names the file, the step and the field."""

from __future__ import annotations

import pickle
import textwrap

import pytest
from pydantic import ValidationError

from chainray.errors import SpecError
from chainray.spec.chain import Chain, Step, chain_from_dict, load_chain


def chain(*steps: dict, **extra) -> Chain:
    return chain_from_dict({"name": "t", "inputs": {"topic": "x"}, "steps": list(steps),
                            **extra}, "t.yaml")


def spec_error(*steps: dict, **extra) -> SpecError:
    with pytest.raises(SpecError) as info:
        chain(*steps, **extra)
    return info.value


def test_valid_chain_finds_final_step_and_settings():
    c = chain({"id": "a", "prompt": "{topic}", "max_tokens": 50},
              {"id": "b", "after": ["a"], "prompt": "{a:.10}"},
              defaults={"model": "m", "max_tokens": 100})
    assert c.final_step.id == "b"
    assert c.settings_for(c.by_id["a"]).max_tokens == 50
    assert c.settings_for(c.by_id["b"]).max_tokens == 100
    assert c.settings_for(c.by_id["b"]).model == "m"


def test_duplicate_ids():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"})
    assert (err.file, err.step, err.field) == ("t.yaml", "a", "id")
    assert "duplicate" in str(err)


def test_unknown_dependency():
    err = spec_error({"id": "a", "prompt": "x", "after": ["ghost"]})
    assert (err.step, err.field) == ("a", "after") and "ghost" in str(err)


def test_cycle_is_named():
    err = spec_error({"id": "a", "prompt": "x", "after": ["c"]},
                     {"id": "b", "prompt": "x", "after": ["a"]},
                     {"id": "c", "prompt": "x", "after": ["b"]},
                     {"id": "d", "prompt": "x", "after": ["c"]})
    assert "cycle" in str(err)
    assert all(name in err.message for name in ("a", "b", "c"))


def test_self_dependency():
    err = spec_error({"id": "a", "prompt": "x", "after": ["a"]})
    assert err.step == "a" and err.field == "after"


def test_template_field_without_input_or_dependency():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "b", "prompt": "{a} {nope}",
                                                   "after": ["a"]})
    assert (err.step, err.field) == ("b", "prompt") and "nope" in str(err)


def test_template_naming_a_step_that_is_not_a_dependency_says_how_to_fix():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "b", "prompt": "x"},
                     {"id": "c", "prompt": "{a}", "after": ["b"]})
    assert err.step == "c" and "after" in err.message


def test_malformed_template():
    err = spec_error({"id": "a", "prompt": "unclosed {topic"})
    assert err.field == "prompt" and "malformed" in err.message


def test_bad_format_spec():
    err = spec_error({"id": "a", "prompt": "{topic:.x}"})
    assert err.field == "prompt"


def test_two_final_steps():
    err = spec_error({"id": "a", "prompt": "x", "final": True},
                     {"id": "b", "prompt": "x", "final": True})
    assert err.field == "final" and "exactly one" in err.message


def test_no_final_step_among_several_sinks():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "b", "prompt": "x"})
    assert err.field == "final" and "final: true" in err.message


def test_final_step_that_others_depend_on():
    err = spec_error({"id": "a", "prompt": "x", "final": True},
                     {"id": "b", "prompt": "{a}", "after": ["a"]})
    assert err.step == "a" and err.field == "final"


def test_step_the_final_step_does_not_reach():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "b", "prompt": "x", "final": True})
    assert err.step == "a" and "lost" in err.message


@pytest.mark.parametrize("field,value", [("max_tokens", 0), ("max_tokens", -5),
                                         ("temperature", 3.5), ("temperature", "hot")])
def test_bad_numbers(field, value):
    err = spec_error({"id": "a", "prompt": "x", field: value})
    assert (err.step, err.field) == ("a", field)


def test_unknown_key_is_named():
    err = spec_error({"id": "a", "prompt": "x", "promt": "typo"})
    assert (err.step, err.field) == ("a", "promt") and "unknown key" in err.message


def test_llm_step_needs_prompt_and_python_step_needs_call():
    assert spec_error({"id": "a"}).field == "prompt"
    assert spec_error({"id": "a", "kind": "python"}).field == "call"


def test_python_step_with_missing_module():
    err = spec_error({"id": "a", "kind": "python", "call": "no_such_module_xyz:f"})
    assert (err.step, err.field) == ("a", "call")


def test_bad_step_id():
    err = spec_error({"id": "has space", "prompt": "x"})
    assert err.field == "id"


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nsteps:\n  - id: a\n   prompt: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_chain(str(path))
    assert info.value.file == str(path) and "line" in info.value.message


def test_unknown_scenario_lists_the_bundled_ones():
    with pytest.raises(SpecError) as info:
        load_chain("no_such_scenario")
    assert "quantum_research" in info.value.message
    with pytest.raises(SpecError, match="did you mean 'quantum_research'"):
        load_chain("quantum_reserch")


def test_yaml_cycle_file(tmp_path):
    path = tmp_path / "cycle.yaml"
    path.write_text(textwrap.dedent("""\
        name: cyc
        steps:
          - {id: a, prompt: x, after: [b]}
          - {id: b, prompt: x, after: [a]}
          - {id: c, prompt: x, after: [a, b]}
        """))
    with pytest.raises(SpecError) as info:
        load_chain(str(path))
    assert "cycle" in info.value.message and info.value.file == str(path)


def test_spec_error_and_chain_survive_pickling():
    err = SpecError("boom", "f.yaml", "a", "after")
    again = pickle.loads(pickle.dumps(err))
    assert (again.file, again.step, again.field, str(again)) == ("f.yaml", "a", "after",
                                                                   str(err))
    c = chain({"id": "a", "prompt": "{topic}"})
    assert pickle.loads(pickle.dumps(c)) == c


def test_chain_is_frozen():
    c = Chain(name="x", steps=[Step(id="a", prompt="p")])
    with pytest.raises(ValidationError):
        c.name = "y"


def test_every_problem_of_a_chain_file_is_reported_at_once(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(textwrap.dedent("""\
        name: many
        inputs: {topic: tea}
        defaults: {modle: m}
        steps:
          - {id: overview, prompt: "Overview of {topic}"}
          - {id: facts, prompt: "Facts on {topc}", after: [overveiw], max_tokens: -3}
          - {id: summary, after: [facts, overview], promtp: x, prompt: "{overveiw:.500}"}
        """))
    with pytest.raises(SpecError) as info:
        load_chain(str(path))
    found = {(p.step, p.field): p.message for p in info.value.problems}
    assert set(found) == {(None, "defaults.modle"), ("facts", "max_tokens"),
                          ("summary", "promtp"), ("facts", "after"), ("facts", "prompt"),
                          ("summary", "prompt")}
    assert all(p.file == str(path) for p in info.value.problems)
    assert "did you mean 'model'?" in found[(None, "defaults.modle")]
    assert "did you mean 'prompt'?" in found[("summary", "promtp")]
    assert "did you mean 'overview'?" in found[("facts", "after")]
    assert "did you mean {topic}?" in found[("facts", "prompt")]
    assert "did you mean {overview}?" in found[("summary", "prompt")]
    text = str(info.value)
    assert text.startswith(f"file {str(path)!r}: 6 problems:")
    assert text.count("\n  - ") == 6 and "step 'facts', field 'after'" in text


def test_steps_that_all_fail_are_the_problems_not_an_empty_list():
    with pytest.raises(SpecError) as info:
        chain_from_dict({"name": "x", "steps": [
            {"id": "a", "prompt": "hi", "max_tokens": "lots"},
            {"id": "b", "promt": "x {a}", "after": ["a"]}]})
    assert {(p.step, p.field) for p in info.value.problems} == {("a", "max_tokens"),
                                                                ("b", "promt")}
    with pytest.raises(SpecError, match="a chain needs at least one step"):
        chain_from_dict({"name": "x", "steps": []})


def test_a_misspelled_dependency_is_one_problem_not_its_consequences():
    # Read as the suggested 'facts', the template and the final step are fine: no report that
    # {facts} is not a dependency, nor that two steps have nothing depending on them.
    with pytest.raises(SpecError) as info:
        chain_from_dict({"name": "x", "inputs": {"topic": "tea"}, "steps": [
            {"id": "facts", "prompt": "facts about {topic}"},
            {"id": "summary", "after": ["fact"], "prompt": "summarise {facts}"}]})
    [problem] = info.value.problems
    assert (problem.step, problem.field) == ("summary", "after")
    assert "did you mean 'facts'? (known: facts)" in problem.message


def test_a_misspelled_step_in_a_template_suggests_adding_it_to_after():
    err = spec_error({"id": "overview", "prompt": "x"},
                     {"id": "b", "prompt": "{overveiw}", "after": []},
                     {"id": "c", "prompt": "{b}", "after": ["b", "overview"]})
    assert (err.step, err.field) == ("b", "prompt")
    assert "did you mean {overview}? (then add 'overview' to this step's after list)" \
        in err.message


def test_a_name_nothing_resembles_gets_no_suggestion():
    err = spec_error({"id": "a", "prompt": "{zzz}"})
    assert "did you mean" not in err.message and "inputs: topic" in err.message


def test_graph_problems_are_all_named():
    err = spec_error({"id": "a", "prompt": "x"}, {"id": "a", "prompt": "x"},
                     {"id": "b", "prompt": "x", "after": ["a", "b", "ghost"]})
    assert [(p.step, p.field) for p in err.problems] == [("a", "id"), ("b", "after"),
                                                          ("b", "after")]
    assert "steps 1, 2" in err.problems[0].message
    assert "itself" in err.problems[1].message and "ghost" in err.problems[2].message


def test_a_misspelled_python_call_suggests_the_function():
    err = spec_error({"id": "a", "kind": "python",
                      "call": "chainray.scenarios.sql_helpers:run_querry"})
    assert (err.step, err.field) == ("a", "call") and "did you mean 'run_query'?" in err.message


def test_steps_built_in_python_still_raise_spec_errors():
    with pytest.raises(SpecError) as info:
        Step(id="a", prompt="x", max_tokens=0, temprature=1)
    assert {(p.step, p.field) for p in info.value.problems} == {("a", "max_tokens"),
                                                                ("a", "temprature")}
    with pytest.raises(SpecError) as info:
        Chain(name="x", steps=[Step(id="a", prompt="{b}"), Step(id="c", prompt="x")])
    assert len(info.value.problems) == 2


def test_a_report_of_many_problems_survives_pickling():
    err = spec_error({"id": "a", "prompt": "{nope}", "after": ["ghost"]})
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and len(again.problems) == 2
