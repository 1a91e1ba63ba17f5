def test_create_read(client):
    r = client.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "张", "given": ["三"]}]})
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert r.headers["location"].endswith(f"/Patient/{pid}/_history/1")
    r = client.get(f"/Patient/{pid}")
    assert r.status_code == 200
    assert r.json()["name"][0]["family"] == "张"
    r = client.get("/Patient", params={"family": "张"})
    assert r.json()["total"] == 1
