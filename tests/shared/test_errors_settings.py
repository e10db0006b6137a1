"""The error model and settings: messages that survive the activity boundary, fields named."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.errors import (
    ConflictError,
    FieldError,
    InputError,
    NotFoundError,
    PermanentError,
    TemporaryError,
    classify_failure,
    field_errors_from_pydantic,
    is_permanent,
    retry_after_of,
)
from shared.settings import Settings


def test_messages_carry_their_class_across_the_activity_boundary() -> None:
    # The durable SDK hands the orchestrator "<reason> \n <details>": only text survives.
    for error, cls in [
        (PermanentError("image broken"), PermanentError),
        (TemporaryError("throttled", retry_after=12), TemporaryError),
        (InputError.single("vm_id", "required"), InputError),
        (NotFoundError("image 'x' is not in the catalogue"), NotFoundError),
        (ConflictError("build running"), ConflictError),
    ]:
        wrapped = f"Activity function 'a' failed: {error} \n Traceback ..."
        assert classify_failure(wrapped) is cls
        assert classify_failure(str(error)) is cls
    assert is_permanent(str(InputError.single("x", "bad")))
    assert not is_permanent(str(TemporaryError("slow")))
    assert classify_failure("ConnectionResetError: peer") is TemporaryError
    # An unexpected exception is a bug or a broken input: retrying cannot help.
    assert classify_failure("Activity function 'a' failed: KeyError: 'plan'") is PermanentError
    assert classify_failure(None) is PermanentError


def test_only_the_leading_prefix_counts() -> None:
    # A temporary error that quotes another error's text stays temporary.
    quoted = "Activity function 'g' failed: TemporaryError: TemporaryError: not ready: NotFound: x"
    assert classify_failure(quoted) is TemporaryError
    # The worker prefixes the exception's class name; the app's prefix follows it.
    assert classify_failure("StepFailedError: PermanentError: sysprep failed") is PermanentError
    assert classify_failure("NotFoundError: NotFound: image 'x'") is NotFoundError


def test_retry_after_crosses_the_boundary_in_the_message() -> None:
    text = f"Activity function 'a' failed: TemporaryError: {TemporaryError('busy', 12)}"
    assert retry_after_of(text) == 12.0
    assert retry_after_of(str(TemporaryError("busy"))) is None


def test_input_error_lists_every_field() -> None:
    err = InputError([FieldError("images[0].name", "required"), FieldError("body", "not JSON")])
    assert "images[0].name: required" in str(err)
    assert "body: not JSON" in str(err)
    body = err.to_json()["error"]
    assert body["code"] == "InvalidInput"
    assert [d["field"] for d in body["details"]] == ["images[0].name", "body"]


def test_pydantic_errors_become_dotted_paths() -> None:
    class Step(BaseModel):
        name: str

    class Image(BaseModel):
        steps: list[Step]

    with pytest.raises(ValidationError) as caught:
        Image.model_validate({"steps": [{"name": "a"}, {}]})
    paths = [e.path for e in field_errors_from_pydantic(caught.value.errors())]  # type: ignore[arg-type]
    assert paths == ["steps[1].name"]


def test_settings_require_a_subscription_and_name_bad_values() -> None:
    with pytest.raises(InputError) as caught:
        Settings.from_env({})
    assert caught.value.errors[0].path == "AZURE_SUBSCRIPTION_ID"
    with pytest.raises(InputError) as caught:
        Settings.from_env({"AZURE_SUBSCRIPTION_ID": "s", "POLL_INTERVAL_SECONDS": "often"})
    assert caught.value.errors[0].path == "POLL_INTERVAL_SECONDS"
    with pytest.raises(InputError) as caught:
        Settings.from_env({"AZURE_SUBSCRIPTION_ID": "s", "AZURE_ARM_ENDPOINT": "http://x"})
    assert "https" in str(caught.value)


def test_settings_defaults_and_allowed_subscriptions() -> None:
    s = Settings.from_env({"AZURE_SUBSCRIPTION_ID": "Sub-1"})
    assert s.allowed_subscriptions == ("sub-1",)
    assert not s.uses_emulator
    s2 = Settings.from_env(
        {
            "AZURE_SUBSCRIPTION_ID": "a",
            "ALLOWED_SUBSCRIPTIONS": "A, b ,",
            "AZURE_ARM_ENDPOINT": "https://127.0.0.1:1",
        }
    )
    assert s2.allowed_subscriptions == ("a", "b")
    # An endpoint without the emulator's CA bundle is not the emulator: no local token for it.
    assert not s2.uses_emulator
    s3 = Settings.from_env(
        {
            "AZURE_SUBSCRIPTION_ID": "a",
            "AZURE_ARM_ENDPOINT": "https://127.0.0.1:1",
            "AZURE_CA_BUNDLE": "/tmp/ca.pem",
        }
    )
    assert s3.uses_emulator
    assert hash(s2) == hash(
        Settings.from_env(
            {
                **{"AZURE_SUBSCRIPTION_ID": "a"},
                "ALLOWED_SUBSCRIPTIONS": "A, b ,",
                "AZURE_ARM_ENDPOINT": "https://127.0.0.1:1",
            }
        )
    )
