"""Forms of the project pages. They validate input only; writes happen in projects.services."""

from __future__ import annotations

from django import forms


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(
        max_length=64, required=False, help_text="Used in the address. Leave empty to derive it from the name."
    )
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=[("member", "Member"), ("admin", "Admin")], initial="member")
