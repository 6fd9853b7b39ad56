/* Arduino-ESP32 with PubSubClient: connects as the device over Wi-Fi, publishes once to the
 * device's own space. Libraries: the ESP32 board package (WiFi, WiFiClientSecure, mbedTLS) and
 * PubSubClient (Nick O'Leary) 2.8 or newer.
 * Limits: PubSubClient's packet buffer is 256 bytes by default and a CONNECT larger than it is
 * dropped without a word, hence setBufferSize(512); its keep-alive defaults to 15 s, hence
 * setKeepAlive(60); it publishes at QoS 0 only (no PUBACK); clientId 1-64 characters. */
#include <WiFi.h>
#include <WiFiClientSecure.h>
#include <PubSubClient.h>
#include <time.h>

@@SIGNING@@
static const char *WIFI_SSID = "your-wifi";
static const char *WIFI_PASSWORD = "your-wifi-password";
static const char *PRODUCT_ID = @@PRODUCT_ID@@;
static const char *DEVICE_ID = @@DEVICE_ID@@;
static const char *DEVICE_SECRET = @@DEVICE_SECRET@@;
static const char *CLIENT_ID = @@CLIENT_ID@@; /* e.g. the MAC address */
static const char *SIGNMETHOD = @@SIGNMETHOD@@;
static const int SECUREMODE = @@SECUREMODE@@; /* 2 = TLS, 3 = plain TCP */
static const bool USE_TIMESTAMP = @@USE_TIMESTAMP@@;
static const int EXCLUSIVE = @@EXCLUSIVE@@;
static const char *MQTT_HOST = @@HOST@@;
static const uint16_t MQTT_PORT = @@PORT@@;
static const char *TOPIC = @@TOPIC@@;

#if @@SECUREMODE@@ == 2
static const char *CA_PEM = @@CA_PEM@@;
WiFiClientSecure net;
#else
WiFiClient net;
#endif
PubSubClient mqtt(net);

static long long now_ms()
{
    /* SNTP: the timestamp is signed, so the clock must be right before the first CONNECT. */
    time_t now = time(nullptr);
    while (now < 1700000000) {
        delay(200);
        now = time(nullptr);
    }
    return (long long)now * 1000;
}

static bool connect_mqtt()
{
    mqtt_sign_fields fields;
    if (mqtt_sign(PRODUCT_ID, DEVICE_ID, DEVICE_SECRET, CLIENT_ID, SECUREMODE, SIGNMETHOD,
                  USE_TIMESTAMP ? now_ms() : -1, EXCLUSIVE, &fields) != 0) {
        Serial.println("signing failed");
        return false;
    }
    if (!mqtt.connect(fields.client_id, fields.username, fields.password)) {
        Serial.printf("connect failed, state %d (4 = bad username or password)\n", mqtt.state());
        return false;
    }
    Serial.println("connected (CONNACK 0)");
    return true;
}

void setup()
{
    Serial.begin(115200);
    WiFi.begin(WIFI_SSID, WIFI_PASSWORD);
    while (WiFi.status() != WL_CONNECTED) delay(200);
    configTime(0, 0, "pool.ntp.org", "time.nist.gov");
#if @@SECUREMODE@@ == 2
    net.setCACert(CA_PEM); /* check the broker's certificate: never setInsecure() */
#endif
    mqtt.setServer(MQTT_HOST, MQTT_PORT);
    mqtt.setBufferSize(512);
    mqtt.setKeepAlive(60);
    if (connect_mqtt()) mqtt.publish(TOPIC, "hello");
}

void loop()
{
    if (!mqtt.connected()) {
        delay(5000);
        connect_mqtt(); /* signs again, with a fresh timestamp */
    }
    mqtt.loop();
}
