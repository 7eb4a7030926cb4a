"""`make run`: DEBUG on, embedded defaults unless DATABASE_URL/REDIS_URL are set."""

from chatsite import env

from .base import *  # noqa: F401,F403

DEBUG = env.env_bool("DEBUG", True)
