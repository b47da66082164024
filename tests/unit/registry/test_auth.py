"""TokenAuth: which token grants which role, and how a bad or missing token is refused."""

from __future__ import annotations

import pytest

from registry.auth import Role, TokenAuth
from registry.errors import PermissionDeniedError, UnauthenticatedError

AUTH = TokenAuth(engine_token="eng-secret", read_token="read-secret", admin_token="admin-secret")


def _bearer(token: str) -> list[tuple[str, str | bytes]]:
    return [("user-agent", "test"), ("authorization", f"Bearer {token}")]


@pytest.mark.parametrize(
    ("token", "role"),
    [
        ("eng-secret", Role.ENGINE),
        ("read-secret", Role.READ),
        ("admin-secret", Role.ADMIN),
        ("admin-secret", Role.ENGINE),
        ("admin-secret", Role.READ),
    ],
)
def test_token_grants_its_role_and_admin_grants_every_role(token: str, role: Role) -> None:
    AUTH.check(role, _bearer(token))


@pytest.mark.parametrize(
    ("token", "role"),
    [
        ("eng-secret", Role.READ),
        ("eng-secret", Role.ADMIN),
        ("read-secret", Role.ENGINE),
        ("read-secret", Role.ADMIN),
    ],
)
def test_known_token_for_another_role_is_permission_denied(token: str, role: Role) -> None:
    with pytest.raises(PermissionDeniedError, match=role.value):
        AUTH.check(role, _bearer(token))


@pytest.mark.parametrize("role", list(Role))
def test_missing_token_is_unauthenticated(role: Role) -> None:
    with pytest.raises(UnauthenticatedError, match=f"needs the {role.value} token"):
        AUTH.check(role, [("user-agent", "test")])
    with pytest.raises(UnauthenticatedError):
        AUTH.check(role, None)


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "Bearer not-a-token")],
        [("authorization", "Bearer admin-secretX")],
        [("authorization", "Bearer ")],
    ],
)
def test_wrong_token_is_unauthenticated(metadata: list[tuple[str, str | bytes]]) -> None:
    with pytest.raises(UnauthenticatedError, match="not valid"):
        AUTH.check(Role.ADMIN, metadata)


@pytest.mark.parametrize(
    "metadata",
    [
        [("authorization", "admin-secret")],  # no scheme
        [("authorization", "Basic admin-secret")],
        [("authorization", b"Bearer admin-secret")],  # binary values are not tokens
        [("x-token", "Bearer admin-secret")],
    ],
)
def test_token_not_sent_as_a_bearer_credential_counts_as_missing(
    metadata: list[tuple[str, str | bytes]],
) -> None:
    with pytest.raises(UnauthenticatedError, match="needs the admin token"):
        AUTH.check(Role.ADMIN, metadata)


def test_with_no_tokens_every_role_is_open() -> None:
    auth = TokenAuth()
    assert auth.open_roles() == [Role.ENGINE, Role.READ, Role.ADMIN]
    for role in Role:
        auth.check(role, None)
        auth.check(role, [("authorization", "Bearer anything")])


def test_with_every_token_no_role_is_open() -> None:
    assert AUTH.open_roles() == []


def test_admin_token_alone_closes_every_role() -> None:
    auth = TokenAuth(admin_token="admin-secret")
    assert auth.open_roles() == []
    for role in Role:
        auth.check(role, _bearer("admin-secret"))
        with pytest.raises(UnauthenticatedError):
            auth.check(role, None)


def test_without_a_read_token_reading_needs_the_admin_token() -> None:
    auth = TokenAuth(engine_token="eng-secret", admin_token="admin-secret")
    assert auth.open_roles() == []
    auth.check(Role.READ, _bearer("admin-secret"))
    with pytest.raises(PermissionDeniedError):
        auth.check(Role.READ, _bearer("eng-secret"))


def test_engine_token_alone_leaves_read_and_admin_open() -> None:
    auth = TokenAuth(engine_token="eng-secret")
    assert auth.open_roles() == [Role.READ, Role.ADMIN]
    auth.check(Role.ADMIN, None)
    with pytest.raises(UnauthenticatedError):
        auth.check(Role.ENGINE, None)


def test_empty_token_is_no_token() -> None:
    auth = TokenAuth(engine_token="", read_token="", admin_token="")
    assert auth.open_roles() == list(Role)
    auth.check(Role.ADMIN, [("authorization", "Bearer ")])


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
@pytest.mark.parametrize("spaces", [" ", "  "])
def test_the_bearer_scheme_is_matched_case_insensitively(scheme: str, spaces: str) -> None:
    # RFC 7235 section 2.1 / RFC 6750 section 2.1: auth-scheme is case-insensitive.
    AUTH.check(Role.ADMIN, [("authorization", f"{scheme}{spaces}admin-secret")])


@pytest.mark.parametrize("value", ["Bearer", "Bearertoken admin-secret", "Basic admin-secret"])
def test_other_schemes_still_count_as_no_bearer_token(value: str) -> None:
    with pytest.raises(UnauthenticatedError, match="send 'authorization: Bearer"):
        AUTH.check(Role.ADMIN, [("authorization", value)])
