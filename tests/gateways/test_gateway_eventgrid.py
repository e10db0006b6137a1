"""Publishing the app's custom events with the real EventGridPublisherClient."""

from __future__ import annotations

import pytest

import emulator
from shared.azure import eventgrid
from shared.errors import PermanentError
from shared.settings import load_settings
from tests.emulator.conftest import EmulatorFactory
from tests.gateways.conftest import point_app_at


def test_publish_reaches_the_topic_with_a_token(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = emulator_factory(modules=[*emulator.MODULES, "emulator.eventgrid_topic"])
    topic = f"{env.url}/_emulator/eventgrid/topics/factory/api/events"
    settings = point_app_at(env, monkeypatch, EVENTGRID_TOPIC_ENDPOINT=topic)
    assert eventgrid.publish(
        settings,
        "ImageFactory.ImageVersionStaged",
        "images/win11-office/versions/1.2.0",
        {"image": "win11-office", "version": "1.2.0"},
        event_id="evt-1",
    )
    published = env.emu.events.events("ImageFactory.ImageVersionStaged")
    assert len(published) == 1
    assert published[0].subject == "images/win11-office/versions/1.2.0"
    assert published[0].data == {"image": "win11-office", "version": "1.2.0"}
    assert published[0].data_version == "1.0"


def test_refused_event_is_permanent(
    emulator_factory: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = emulator_factory(modules=[*emulator.MODULES, "emulator.eventgrid_topic"])
    topic = f"{env.url}/_emulator/eventgrid/topics/factory/api/events"
    settings = point_app_at(env, monkeypatch, EVENTGRID_TOPIC_ENDPOINT=topic)
    with pytest.raises(PermanentError) as caught:
        # An empty subject is refused by the topic (400).
        eventgrid.publish(settings, "ImageFactory.X", "", {"a": 1})
    assert "400" in str(caught.value)


def test_without_a_topic_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.delenv("EVENTGRID_TOPIC_ENDPOINT", raising=False)
    assert eventgrid.publish(load_settings(), "ImageFactory.X", "s", {}) is False
