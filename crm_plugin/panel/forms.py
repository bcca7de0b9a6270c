"""The panel's forms: they parse what the agent clicked or typed into service arguments."""

from typing import Any

from django import forms

from twosv.services import SESSION_ANSWER_FIELDS

_YES_NO = {"yes": True, "no": False}


# What each answer's Yes means, for the result line ("Answer recorded: has the device: Yes.").
ANSWER_SAID = {
    "has_device_access": "has the device",
    "has_backup_device_access": "has the backup device",
    "phone_number_changed": "the phone's number changed since 2SV was set up",
}
# The close question's outcomes, as the form states them.
OUTCOME_CHOICES = [
    ("resolved", "Yes, solved"),
    ("not_resolved", "No, not solved"),
    ("escalated", "Escalated"),
]


class AnswerForm(forms.Form):
    """A Yes / No button under the step's question."""

    field = forms.ChoiceField(choices=[(name, name) for name in SESSION_ANSWER_FIELDS])
    value = forms.ChoiceField(choices=[("yes", "Yes"), ("no", "No")])

    def answers(self) -> dict[str, bool | None]:
        return {self.cleaned_data["field"]: _YES_NO[self.cleaned_data["value"]]}

    def said(self) -> str:
        field = self.cleaned_data["field"]
        value = "Yes" if self.cleaned_data["value"] == "yes" else "No"
        return f"{ANSWER_SAID.get(field, field)}: {value}"


class MethodForm(forms.Form):
    """Troubleshoot another of the customer's methods."""

    method_id = forms.CharField(max_length=128)


class PhoneForm(forms.Form):
    """The number the caller says: compared with the one on file, never shown back."""

    phone_number = forms.CharField(max_length=40, strip=True)


class LookupForm(forms.Form):
    force = forms.BooleanField(required=False)


class CloseForm(forms.Form):
    """ "Did this solve the customer's problem?": the outcome, and whether the step helped.

    Both are required: the page says so, and a form without either is refused with a message
    naming what is missing (the feedback is never skipped silently).
    """

    outcome = forms.ChoiceField(choices=OUTCOME_CHOICES)
    helpful = forms.ChoiceField(choices=[("yes", "Yes"), ("no", "No")])
    comment = forms.CharField(max_length=2000, required=False, widget=forms.Textarea)

    def missing(self) -> str:
        """Say what to fix: the outcome, the feedback, or both."""
        parts = []
        if "outcome" in self.errors:
            parts.append("whether this solved the customer's problem (Yes, No or Escalated)")
        if "helpful" in self.errors:
            parts.append("whether the suggested step was helpful (Yes or No)")
        if not parts:
            return "The comment is too long (2000 characters at most)."
        return "Not closed yet: say " + " and ".join(parts) + "."

    def close_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "outcome": data["outcome"],
            "helpful": _YES_NO[data["helpful"]],
            "comment": data["comment"],
        }
