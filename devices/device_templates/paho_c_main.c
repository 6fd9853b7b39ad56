/* Connects as the device with Paho C (MQTT 3.1.1, set explicitly: Paho's default tries 3.1.1 and
 * silently falls back to 3.1), publishes once at QoS 1 to the device's own space and exits 0 on
 * the PUBACK. Build: make; run: ./device
 * Limits: clientId 1-64 characters; keep-alive 60 s; signs with the system clock (time(NULL)). */
#include <stdio.h>
#include <time.h>
#include "MQTTClient.h"

@@SIGNING@@
#define PRODUCT_ID @@PRODUCT_ID@@
#define DEVICE_ID @@DEVICE_ID@@
#define DEVICE_SECRET @@DEVICE_SECRET@@
#define CLIENT_ID @@CLIENT_ID@@
#define SIGNMETHOD @@SIGNMETHOD@@
#define SECUREMODE @@SECUREMODE@@ /* 2 = TLS, 3 = plain TCP */
#define USE_TIMESTAMP @@USE_TIMESTAMP@@
#define EXCLUSIVE @@EXCLUSIVE@@
#define SERVER_URI @@SERVER_URI@@
#define CA_FILE "../ca.pem"
#define TOPIC @@TOPIC@@

int main(void)
{
    mqtt_sign_fields fields;
    long long timestamp_ms = USE_TIMESTAMP ? (long long)time(NULL) * 1000 : -1;
    if (mqtt_sign(PRODUCT_ID, DEVICE_ID, DEVICE_SECRET, CLIENT_ID, SECUREMODE, SIGNMETHOD,
                  timestamp_ms, EXCLUSIVE, &fields) != 0) {
        fprintf(stderr, "signing failed: check the ids and the sign method\n");
        return 2;
    }

    MQTTClient client;
    int rc = MQTTClient_create(&client, SERVER_URI, fields.client_id,
                               MQTTCLIENT_PERSISTENCE_NONE, NULL);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "MQTTClient_create failed: %s\n", MQTTClient_strerror(rc));
        return 1;
    }
    MQTTClient_connectOptions options = MQTTClient_connectOptions_initializer;
    options.MQTTVersion = MQTTVERSION_3_1_1;
    options.keepAliveInterval = 60;
    options.cleansession = 1;
    options.username = fields.username;
    options.password = fields.password;
#if SECUREMODE == 2
    MQTTClient_SSLOptions tls = MQTTClient_SSLOptions_initializer;
    tls.trustStore = CA_FILE;       /* the broker's CA */
    tls.enableServerCertAuth = 1;   /* check the certificate chain */
    tls.verify = 1;                 /* and that it names the host */
    options.ssl = &tls;
#endif
    rc = MQTTClient_connect(client, &options);
    if (rc != MQTTCLIENT_SUCCESS) {
        /* 1-5: the broker's CONNACK code (4 = bad username or password); below 0: no CONNACK. */
        fprintf(stderr, "connect failed: %d (%s)\n", rc, MQTTClient_strerror(rc));
        MQTTClient_destroy(&client);
        return 1;
    }
    printf("connected (CONNACK 0) as %s\n", fields.client_id);

    MQTTClient_message message = MQTTClient_message_initializer;
    message.payload = "hello";
    message.payloadlen = 5;
    message.qos = 1;
    message.retained = 0; /* the platform refuses retained messages */
    MQTTClient_deliveryToken token;
    rc = MQTTClient_publishMessage(client, TOPIC, &message, &token);
    if (rc == MQTTCLIENT_SUCCESS) rc = MQTTClient_waitForCompletion(client, token, 10000);
    if (rc != MQTTCLIENT_SUCCESS) {
        fprintf(stderr, "no PUBACK: %d (%s)\n", rc, MQTTClient_strerror(rc));
        MQTTClient_destroy(&client);
        return 1;
    }
    printf("published to %s at QoS 1: PUBACK received\n", TOPIC);
    MQTTClient_disconnect(client, 1000);
    MQTTClient_destroy(&client);
    return 0;
}
