"""Output serializers for the engine's decision: the next step and the advisories."""

import functools
from typing import Any

from django.utils.translation import get_language, gettext
from rest_framework import serializers

from twosv.vocabulary import AdvisoryCode, AdvisorySeverity


class _TranslatedCharField(serializers.CharField):
    """Engine texts are marked for translation in twosv/engine/; translate them on the way out."""

    def to_representation(self, value: Any) -> str:
        return _translated(get_language(), str(value))


# A state renders half a dozen engine texts, and Django's gettext walks the active catalog and
# its fallbacks for each: remembered per language (the texts with numbers in them vary, hence
# the bound).
@functools.lru_cache(maxsize=4096)
def _translated(language: str | None, text: str) -> str:
    return gettext(text)


class QuestionOutput(serializers.Serializer):
    field = serializers.ChoiceField(
        choices=["has_device_access", "has_backup_device_access", "phone_number_changed"],
        help_text="The session answer the question fills in (PATCH its `answers`).",
    )
    prompt = _TranslatedCharField()


class ActionOutput(serializers.Serializer):
    method = serializers.ChoiceField(choices=["GET", "POST", "PATCH"])
    url = serializers.CharField()
    label = _TranslatedCharField()  # type: ignore[assignment]


class StepOutput(serializers.Serializer):
    code = serializers.CharField()
    title = _TranslatedCharField()
    instructions = _TranslatedCharField()
    reason = _TranslatedCharField()
    rule = serializers.CharField()
    article_section = serializers.CharField(allow_null=True)
    question = QuestionOutput(allow_null=True)
    action = ActionOutput(allow_null=True)
    alternatives = serializers.ListField(child=serializers.CharField())
    seconds_remaining = serializers.IntegerField(allow_null=True)
    method_id = serializers.CharField(allow_null=True)


class AdvisoryOutput(serializers.Serializer):
    code = serializers.ChoiceField(choices=[code.value for code in AdvisoryCode])
    severity = serializers.ChoiceField(choices=[severity.value for severity in AdvisorySeverity])
    message = _TranslatedCharField()
    method_id = serializers.CharField(allow_null=True, required=False)
    # method_locked only: when the other method's lock ends; absent otherwise.
    locked_until = serializers.DateTimeField(required=False)
    # delivery_incident only: the region and since when (the panel's banner); absent otherwise.
    region = serializers.CharField(required=False)
    since = serializers.DateTimeField(required=False)

    # Left out rather than null where they don't apply (also honoured by `renderer()`).
    omit_when_null = ("locked_until", "region", "since")

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data: dict[str, Any] = super().to_representation(instance)
        for name in self.omit_when_null:
            if data.get(name) is None:
                data.pop(name, None)
        return data
