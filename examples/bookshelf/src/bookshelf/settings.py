"""Settings from the environment, as pydantic-settings reads them: plain
strings as they are, lists and mappings from JSON."""

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BOOKSHELF_")

    greeting: str = "Hello from the bookshelf"
    # Free text: UTF-8, quotes, $, #, backslashes, several lines.
    motto: str = ""
    signing_key: str = ""
    database_url: str = ""
    # Structured settings, given as JSON.
    shelves: list[str] = []
    limits: dict[str, int] = {}
    page_size: int = 20
    read_only: bool = False
    # Host names the app answers (Starlette's TrustedHostMiddleware).
    allowed_hosts: list[str] = ["*"]


settings = Settings()
