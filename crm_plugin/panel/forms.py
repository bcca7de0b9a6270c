"""The panel's forms: they parse what the agent clicked or typed into service arguments."""

from typing import Any

from django import forms

from twosv.models import SessionOutcome
from twosv.services import SESSION_ANSWER_FIELDS

_YES_NO = {"yes": True, "no": False}


class AnswerForm(forms.Form):
    """A Yes / No button under the step's question."""

    field = forms.ChoiceField(choices=[(name, name) for name in SESSION_ANSWER_FIELDS])
    value = forms.ChoiceField(choices=[("yes", "Yes"), ("no", "No")])

    def answers(self) -> dict[str, bool | None]:
        return {self.cleaned_data["field"]: _YES_NO[self.cleaned_data["value"]]}


class MethodForm(forms.Form):
    """Troubleshoot another of the customer's methods."""

    method_id = forms.CharField(max_length=128)


class PhoneForm(forms.Form):
    """The number the caller says: compared with the one on file, never shown back."""

    phone_number = forms.CharField(max_length=40, strip=True)


class LookupForm(forms.Form):
    force = forms.BooleanField(required=False)


class CloseForm(forms.Form):
    """ "Did this solve it?": the outcome, and whether the suggested step helped."""

    outcome = forms.ChoiceField(choices=SessionOutcome.choices)
    helpful = forms.ChoiceField(
        choices=[("", "Not said"), ("yes", "Yes"), ("no", "No")], required=False
    )
    comment = forms.CharField(max_length=2000, required=False, widget=forms.Textarea)

    def close_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "outcome": data["outcome"],
            "helpful": _YES_NO.get(data["helpful"]),
            "comment": data["comment"],
        }
