from pathlib import Path

SMALL = Path("/tmp/small.json").read_bytes()


async def test_upload_then_metrics(client):
    response = await client.upload(SMALL)
    assert response.status_code == 200, response.text
    print(response.json())
    data = await client.data("{ metrics { totalConversations totalMessages medianFirstResponseTimeMinutes p90ResponseTimeMinutes agentCount } conversations(first: 1) { totalCount edges { cursor node { chatId agents messages(first: 2) { edges { node { sender content sentAt } } } } } pageInfo { hasNextPage endCursor } } }")
    print(data)
    assert data["metrics"]["totalConversations"] == 2
