"""Forms of the project pages. They validate input only; writes happen in projects.services."""

from __future__ import annotations

from django import forms

from projects.services import INVITE_LINK_MAX_USES


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=100)
    slug = forms.SlugField(
        max_length=64, required=False, help_text="Used in the address. Leave empty to derive it from the name."
    )
    description = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 3}))


class InviteForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=[("member", "Member"), ("admin", "Admin")], initial="member")


class InviteLinkForm(forms.Form):
    """An invite link's settings; only owners are offered the admin role (projects.services.invite_link_create)."""

    EXPIRY_CHOICES = [("1", "1 hour"), ("24", "1 day"), ("168", "7 days"), ("720", "30 days"), ("", "Never")]

    role = forms.ChoiceField(choices=[("member", "Member"), ("admin", "Admin")], initial="member", label="Joins as")
    max_uses = forms.IntegerField(
        min_value=1, max_value=INVITE_LINK_MAX_USES, required=False, label="Max uses", help_text="Leave empty for no limit."
    )
    expires_in_hours = forms.TypedChoiceField(
        choices=EXPIRY_CHOICES, coerce=int, empty_value=None, required=False, initial="168", label="Expires after"
    )

    def __init__(self, *args: object, allow_admin: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if not allow_admin:
            self.fields["role"].choices = [("member", "Member")]
