# Read state moves out of RoomMember into ReadMarker. RoomMember was both the
# read state (created for anyone who opened a room) and the membership of a
# private room, so making a public room private kept everyone who had ever
# opened it. From here on RoomMember is membership only: a public room keeps
# its creator (room_create adds them), and people added explicitly.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models
from django.db.models import F, Q


def split_read_state(apps, schema_editor):
    RoomMember = apps.get_model("chat", "RoomMember")
    ReadMarker = apps.get_model("chat", "ReadMarker")
    rows = RoomMember.objects.filter(last_read_message_id__gt=0).values_list("room_id", "user_id", "last_read_message_id")
    batch = []
    for room_id, user_id, last_read in rows.iterator(chunk_size=5000):
        batch.append(ReadMarker(room_id=room_id, user_id=user_id, last_read_message_id=last_read))
        if len(batch) >= 5000:
            ReadMarker.objects.bulk_create(batch)
            batch = []
    if batch:
        ReadMarker.objects.bulk_create(batch)
    # In a public room a row only meant "has read it"; its creator stays a member.
    RoomMember.objects.filter(room__is_private=False).exclude(
        Q(room__created_by__isnull=False) & Q(user_id=F("room__created_by_id"))
    ).delete()


def merge_read_state(apps, schema_editor):
    RoomMember = apps.get_model("chat", "RoomMember")
    ReadMarker = apps.get_model("chat", "ReadMarker")
    for marker in ReadMarker.objects.all().iterator(chunk_size=5000):
        RoomMember.objects.update_or_create(
            room_id=marker.room_id, user_id=marker.user_id, defaults={"last_read_message_id": marker.last_read_message_id}
        )


class Migration(migrations.Migration):

    dependencies = [
        ('chat', '0003_room_messages_deleted'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ReadMarker',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('last_read_message_id', models.BigIntegerField(default=0)),
                ('room', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='chat.room')),
                ('user', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'indexes': [models.Index(fields=['room'], name='readmarker_room_idx')],
                'constraints': [models.UniqueConstraint(fields=('user', 'room'), name='readmarker_user_room_uniq')],
            },
        ),
        migrations.RunPython(split_read_state, merge_read_state),
        migrations.RemoveField(
            model_name='roommember',
            name='last_read_message_id',
        ),
    ]
