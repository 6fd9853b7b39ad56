def test_reset_on_main(client, db):
    assert client.get("/accounts/password_reset/").status_code == 404
